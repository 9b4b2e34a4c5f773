"""The gateway's routes under `/v1`: one module per area, each a `router` whose tag is the
module's name (`text`, `images`, ..., `operations`). `apps.gateway.main` includes them."""
