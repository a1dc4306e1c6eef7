from common.migrations import run_env
from services.auth.models import metadata

run_env(metadata)
