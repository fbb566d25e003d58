"""The store as the releases before migrations left it: ledger, reports, step outputs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precompute_jobs",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("extent", sa.Text, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float),
    )
    op.create_table(
        "precompute_batches",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("batch", sa.Integer, primary_key=True),
        sa.Column("contribution", sa.Text, nullable=False),
        sa.Column("scanned_at", sa.Float, nullable=False),
    )
    op.create_table(
        "precompute_report_headers",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("computed_at", sa.Float, nullable=False),
        sa.Column("watermark", sa.Text, nullable=False),
        sa.Column("entity_count", sa.BigInteger, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("unused_count", sa.Integer, nullable=False),
        sa.Column("batch_count", sa.Integer, nullable=False),
        sa.Column("shard_count", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("utilisation", sa.Float),
        sa.Column("run_id", sa.String(64)),
        sa.Column("summary", sa.Text, nullable=False),
    )
    op.create_table(
        "precompute_report_rows",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("entity_type", sa.String(100), primary_key=True),
        sa.Column("entity_id", sa.String(200), primary_key=True),
        sa.Column("unused", sa.Boolean, nullable=False),
        sa.Column("usage_count", sa.BigInteger, nullable=False),
        sa.Column("last_used", sa.BigInteger),
        sa.Column("detail", sa.Text),
    )
    op.create_table(
        "precompute_step_outputs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_key", sa.String(255), primary_key=True),
        sa.Column("output_name", sa.String(255), primary_key=True),
        sa.Column("mapping_key", sa.String(255), primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in (
        "precompute_step_outputs",
        "precompute_report_rows",
        "precompute_report_headers",
        "precompute_batches",
        "precompute_jobs",
    ):
        op.drop_table(table)
