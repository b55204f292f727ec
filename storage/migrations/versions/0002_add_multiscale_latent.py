"""Add the multi-scale latent distance to scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: models without multi-scale statistics, and rows scored before
    # this revision, have no such distance.
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("latent_multiscale", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("latent_multiscale")
