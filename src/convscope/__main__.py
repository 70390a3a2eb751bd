from convscope.cli import main

raise SystemExit(main())
