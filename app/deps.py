"""Request dependencies, as `Annotated` aliases so routes declare what they need by type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.dataplane import DataPlane
from app.repository import ModelRepository
from app.settings import Settings


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


async def get_repository(request: Request) -> ModelRepository:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane.repository


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
