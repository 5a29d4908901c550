from ferlib.cli import main

raise SystemExit(main())
