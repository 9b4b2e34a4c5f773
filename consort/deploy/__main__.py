import sys

from consort.deploy.cli import main

sys.exit(main())
