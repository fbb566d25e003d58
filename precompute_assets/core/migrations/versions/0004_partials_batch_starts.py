"""Shards' partial contributions (the lifted combiner), and batches cut on the actual keys.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precompute_partials",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("first_batch", sa.Integer, primary_key=True),
        sa.Column("last_batch", sa.Integer, nullable=False),
        sa.Column("contribution", sa.Text, nullable=False),
        sa.Column("lifted_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("precompute_jobs") as jobs:
        jobs.add_column(sa.Column("batch_starts", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("precompute_jobs") as jobs:
        jobs.drop_column("batch_starts")
    op.drop_table("precompute_partials")
