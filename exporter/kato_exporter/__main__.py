from kato_exporter.cli import main

raise SystemExit(main())
