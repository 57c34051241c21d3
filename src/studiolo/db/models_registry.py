"""Imports every ORM module so ``Base.metadata`` is complete (Alembic, tests, create_all)."""

from studiolo.db.base import Base
from studiolo.domain.accounts import models as _accounts  # noqa: F401
from studiolo.domain.adapters import models as _adapters  # noqa: F401
from studiolo.domain.billing import models as _billing  # noqa: F401
from studiolo.domain.film import models as _film  # noqa: F401
from studiolo.domain.gallery import models as _gallery  # noqa: F401
from studiolo.domain.generation import models as _generation  # noqa: F401
from studiolo.domain.understanding import models as _understanding  # noqa: F401
from studiolo.domain.webhooks import models as _webhooks  # noqa: F401

metadata = Base.metadata
