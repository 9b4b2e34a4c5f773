import sys

from consort.governance.cli import main

sys.exit(main())
