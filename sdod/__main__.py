from sdod.cli import main

raise SystemExit(main())
