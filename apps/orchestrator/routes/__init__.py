"""The orchestrator's HTTP routes, one `APIRouter` a module: workflows, cases, schedule."""
