from mneme.app.cli import main

raise SystemExit(main())
