from xypipe._cli import main

raise SystemExit(main())
