"""What the sensors know of each scope, and how far they have read the catalogue's changes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precompute_scope_states",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(200)),
        sa.Column("utilisation", sa.Float, nullable=False),
        sa.Column("watermark", sa.Text),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("requested_at", sa.Float),
        sa.Column("request_key", sa.Text),
        sa.Column("fresh_recorded", sa.Boolean),
    )
    op.create_table(
        "precompute_catalogue_cursors",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("precompute_catalogue_cursors")
    op.drop_table("precompute_scope_states")
