"""The hub's tables. Times are unix seconds (float): portable between SQLite and
PostgreSQL, and rendered as ISO 8601 by the API."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Model(Base):
    __tablename__ = "models"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    visibility: Mapped[str] = mapped_column(String(10), default="public")
    hardware: Mapped[str] = mapped_column(String(50), default="cpu")
    github_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    paper_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    license_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    cover_image_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_models_owner_name"),)


class Version(Base):
    __tablename__ = "versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_pk: Mapped[int] = mapped_column(ForeignKey("models.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    cog_version: Mapped[str] = mapped_column(String(40))
    openapi_schema: Mapped[dict] = mapped_column(JSON)
    project_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    remote_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    weights: Mapped[str | None] = mapped_column(Text, nullable=True)  # path handed over as COG_WEIGHTS
    parent_version: Mapped[str | None] = mapped_column(String(64), nullable=True)  # trained from
    can_train: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Prediction(Base):
    """A prediction or (kind == "training") a training: one row for its whole life."""

    __tablename__ = "predictions"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(10), default="prediction")
    model: Mapped[str] = mapped_column(String(201))
    version: Mapped[str] = mapped_column(String(64), index=True)
    deployment: Mapped[str | None] = mapped_column(String(201), nullable=True)
    destination: Mapped[str | None] = mapped_column(String(201), nullable=True)
    status: Mapped[str] = mapped_column(String(12), index=True)
    input: Mapped[dict] = mapped_column(JSON)  # as the client sent it
    model_input: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # as the model server gets it
    output: Mapped[object | None] = mapped_column(JSON, nullable=True)
    logs: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_events_filter: Mapped[list | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str] = mapped_column(String(10), default="api")
    stream_key: Mapped[str] = mapped_column(String(64), unique=True)
    __table_args__ = (Index("ix_predictions_kind_pk", "kind", "pk"),)


class File(Base):
    """A stored file: uploaded through POST /v1/files, an output a model server uploaded,
    or an input URL the hub fetched."""

    __tablename__ = "files"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # upload | output | input
    name: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    file_metadata: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    path: Mapped[str] = mapped_column(Text)  # relative to the data dir
    access_key: Mapped[str] = mapped_column(String(64), unique=True)  # capability for key URLs
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Deployment(Base):
    __tablename__ = "deployments"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(201))
    version: Mapped[str] = mapped_column(String(64))
    hardware: Mapped[str] = mapped_column(String(50))
    min_instances: Mapped[int] = mapped_column(Integer, default=0)
    max_instances: Mapped[int] = mapped_column(Integer, default=1)
    release_number: Mapped[int] = mapped_column(Integer, default=1)
    release_created_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_deployments_owner_name"),)


class Webhook(Base):
    """The outbox: one row per webhook message, kept until delivered (or given up), so a
    restart of the hub sends what was not yet delivered."""

    __tablename__ = "webhooks"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(40), unique=True)
    prediction_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(12))
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Setting(Base):
    """Small persistent values (the webhook signing secret)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
