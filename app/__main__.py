from kuamo.cli import main

raise SystemExit(main())
