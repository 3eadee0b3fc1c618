"""The orchestration plugin's piccolo app: its migrations, run by ``noa migrate``."""

from __future__ import annotations

import os

from piccolo.conf.apps import AppConfig

APP_CONFIG = AppConfig(
    app_name="orchestration",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "piccolo_migrations"),
)
