from common.migrations import run_env
from services.analytics.models import metadata

run_env(metadata)
