from convolens.cli import main

raise SystemExit(main())
