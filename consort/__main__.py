from consort.cli import main

raise SystemExit(main())
