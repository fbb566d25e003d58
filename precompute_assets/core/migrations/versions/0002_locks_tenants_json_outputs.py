"""Scope locks for job openers, each report's tenant, step outputs as JSON, job retention.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precompute_scope_locks",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
    )
    with op.batch_alter_table("precompute_report_headers") as headers:
        headers.add_column(sa.Column("tenant", sa.String(200)))
    op.create_index(
        "ix_precompute_report_headers_tool_tenant", "precompute_report_headers", ["tool", "tenant"]
    )
    op.create_index("ix_precompute_jobs_closed_at", "precompute_jobs", ["closed_at"])
    # Step outputs live for one re-execution; pickled ones are not read any more: start afresh.
    op.drop_table("precompute_step_outputs")
    op.create_table(
        "precompute_step_outputs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_key", sa.String(255), primary_key=True),
        sa.Column("output_name", sa.String(255), primary_key=True),
        sa.Column("mapping_key", sa.String(255), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("precompute_step_outputs")
    op.create_table(
        "precompute_step_outputs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_key", sa.String(255), primary_key=True),
        sa.Column("output_name", sa.String(255), primary_key=True),
        sa.Column("mapping_key", sa.String(255), primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
    )
    op.drop_index("ix_precompute_jobs_closed_at", "precompute_jobs")
    op.drop_index("ix_precompute_report_headers_tool_tenant", "precompute_report_headers")
    with op.batch_alter_table("precompute_report_headers") as headers:
        headers.drop_column("tenant")
    op.drop_table("precompute_scope_locks")
