"""``python -m bench [--quick] [--databases sqlite,postgres,mariadb] [--scenarios a,b,...]``."""

from bench.runner import main

raise SystemExit(main())
