"""The size catalog's labels are never the same twice (alone, or as the generator shows them with their pixels, or
next to the aspect ratios in the same menu), and styles are shown by name."""

from __future__ import annotations

from studiolo.domain.generation import styles as st
from studiolo.web.render import _credits


def test_size_labels_are_distinct_and_say_the_shape() -> None:
    labels = [st.size_label(w, h) for w, h in st.STANDARD_SIZES]
    assert len(set(labels)) == len(labels), labels
    shown = [f"{st.size_label(w, h)} ({w}\N{MULTIPLICATION SIGN}{h})" for w, h in st.STANDARD_SIZES]
    assert len(set(shown + list(st.ASPECT_RATIOS))) == len(shown) + len(st.ASPECT_RATIOS)
    # The label is not the pixels again ("512x512 (512 by 512)" was).
    assert not any(f"{w}" in st.size_label(w, h) for w, h in st.STANDARD_SIZES)
    assert st.size_label(512, 768) == "Portrait 2:3"
    assert st.size_label(1024, 576) == "Landscape 16:9"
    assert st.size_label(768, 768) == "Square"


def test_style_names_not_slugs() -> None:
    slug = st.BUILTIN_STYLES[0].slug
    assert st.style_name(slug) == st.BUILTIN_STYLES[0].name != slug
    assert st.style_name("my-own", {"my-own": "My own look"}) == "My own look"
    assert st.style_name("someone-elses") == "someone-elses"
    assert st.style_name(None) == st.style_name("") == st.style_name("none") == "No style"


def test_credits_never_print_a_spent_amount_as_zero() -> None:
    assert _credits(0) == "0.00"
    assert _credits(0.0066) == "0.0066"
    assert _credits(1234.5) == "1,234.50"
