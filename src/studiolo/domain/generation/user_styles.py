"""Users' own style templates (the built-in ones live in code, styles.py): list, create, delete, and the one a
request names."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from studiolo.db.session import Database
from studiolo.domain.generation import styles as st
from studiolo.domain.generation.models import StyleTemplate
from studiolo.domain.generation.schemas import SizeOption, StyleCatalog, StyleCreate, StyleView
from studiolo.errors import Conflict, InvalidInput, NotFound


def owned_style(session: Session, owner_id: str, slug: str) -> st.Style:
    """The built-in style ``slug``, or the owner's own; 422 unknown_style otherwise."""
    builtin = st.BUILTIN_BY_SLUG.get(slug)
    if builtin:
        return builtin
    row = session.scalar(select(StyleTemplate).where(StyleTemplate.owner_id == owner_id, StyleTemplate.slug == slug))
    if row is None:
        raise InvalidInput(
            f"Unknown style '{slug}'. GET /api/v1/styles lists the styles you can use.",
            code="unknown_style",
            details={"style": slug},
        )
    return st.Style(row.slug, row.name, row.category, row.prompt_template, row.negative_template, builtin=False)


def style_catalog(db: Database, owner_id: str) -> StyleCatalog:
    with db.session() as session:
        own = session.scalars(
            select(StyleTemplate).where(StyleTemplate.owner_id == owner_id).order_by(StyleTemplate.slug)
        ).all()
    styles = [StyleView(**{k: getattr(s, k) for k in StyleView.model_fields}) for s in st.BUILTIN_STYLES]
    styles += [
        StyleView(
            slug=s.slug,
            name=s.name,
            category=s.category,
            prompt_template=s.prompt_template,
            negative_template=s.negative_template,
            builtin=False,
        )
        for s in own
    ]
    return StyleCatalog(
        styles=styles,
        sizes=[SizeOption(width=w, height=h, label=st.size_label(w, h)) for w, h in st.STANDARD_SIZES],
        aspect_ratios=list(st.ASPECT_RATIOS),
        qualities=dict(st.QUALITY_STEPS),
    )


def create_style(db: Database, owner_id: str, data: StyleCreate) -> StyleView:
    if data.slug in st.BUILTIN_BY_SLUG:
        raise Conflict(f"'{data.slug}' is a built-in style name.", code="style_exists")
    try:
        with db.session() as session:
            session.add(StyleTemplate(owner_id=owner_id, **data.model_dump()))
    except IntegrityError as exc:
        raise Conflict(f"You already have a style named '{data.slug}'.", code="style_exists") from exc
    return StyleView(**data.model_dump(), builtin=False)


def delete_style(db: Database, owner_id: str, slug: str) -> None:
    with db.session() as session:
        row = session.scalar(
            select(StyleTemplate).where(StyleTemplate.owner_id == owner_id, StyleTemplate.slug == slug)
        )
        if row is None:
            raise NotFound(f"No style of yours named '{slug}'.", code="style_not_found")
        session.delete(row)
    db.checkpoint()  # its prompt template must not stay in the SQLite log (test_secure_delete.py)
