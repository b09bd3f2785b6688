import sys

from pixcore._cli import main

sys.exit(main())
