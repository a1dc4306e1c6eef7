from common.migrations import run_env
from services.streaming.models import metadata

run_env(metadata)
