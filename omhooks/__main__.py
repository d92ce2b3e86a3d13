from omhooks.cli import main

raise SystemExit(main())
