from sparsenets.cli import main

raise SystemExit(main())
