import sys

from femsr.cli import main

sys.exit(main())
