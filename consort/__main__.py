from consort.dev.cli import main

raise SystemExit(main())
