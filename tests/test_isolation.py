"""Programs are isolated from each other: nothing one program does to its interpreter or process is seen by the next
program the same sandbox runs (each program runs in a process forked from a clean template). Under gVisor.

Each case is a *mutator* (a program that changes some state and passes its own tests) followed, in the same sandbox,
by a *victim* (another task's program that passes its test when run alone). The victim must still pass.
"""

from __future__ import annotations

import pytest
from sandbox_fixtures import no_leftover_processes

from cure.sandbox import Job, Limits, SandboxPool

pytestmark = pytest.mark.gvisor

LIMIT = 1.0

# name -> (mutator, victim, the victim's expected output)
CASES = {
    "decimal_context": (
        "import decimal\ndecimal.getcontext().prec = 3\nprint(1)",
        "from decimal import Decimal\nprint(Decimal(1) / Decimal(7))",
        "0.1428571428571428571428571429",
    ),
    "decimal_context_alias": (
        "from decimal import getcontext\nctx = getcontext()\nctx.prec = 2\nctx.rounding = 'ROUND_DOWN'\nprint(1)",
        "from decimal import Decimal\nprint(Decimal(2) / Decimal(3))",
        "0.6666666666666666666666666667",
    ),
    "decimal_setcontext": (
        "import decimal\ndecimal.setcontext(decimal.Context(prec=4))\nprint(1)",
        "from decimal import Decimal\nprint(Decimal(1) / Decimal(3))",
        "0.3333333333333333333333333333",
    ),
    "decimal_default_context_alias": (
        "import decimal\nd = decimal.DefaultContext\nd.prec = 5\nprint(1)",
        "import decimal, threading\nr = []\nt = threading.Thread(target=lambda: r.append(decimal.getcontext().prec))\n"
        "t.start()\nt.join()\nprint(r[0])",
        "28",
    ),
    "copy_dispatch_subscript": (
        "import copy\ncopy._deepcopy_dispatch[list] = lambda x, memo: 'hacked'\nprint(1)",
        "import copy\nprint(copy.deepcopy([1, 2]))",
        "[1, 2]",
    ),
    "copy_dispatch_alias": (
        "import copy\nd = copy._deepcopy_dispatch\nd[dict] = lambda x, memo: 'hacked'\nprint(1)",
        "import copy\nprint(copy.deepcopy({'a': 1}))",
        "{'a': 1}",
    ),
    "recursion_limit": (
        "import sys\nsys.setrecursionlimit(60)\nprint(1)",
        "def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\nprint(f(500))",
        "500",
    ),
    "random_seed": (
        "import random\nrandom.seed(1234)\nprint(1)",
        "import random\nr = random.Random(1234)\nprint(random.random() == r.random())",
        "False",
    ),
    "builtins": (
        "import builtins\nbuiltins.divmod = lambda *a: 'hacked'\nbuiltins.leak = 1\nprint(1)",
        "import builtins\nprint(divmod(7, 2), hasattr(builtins, 'leak'))",
        "(3, 1) False",
    ),
    "builtins_through_self": (
        "abs.__self__.sorted = lambda x: 'hacked'\nprint(1)",
        "print(sorted([3, 1, 2]))",
        "[1, 2, 3]",
    ),
    "sys_modules": (
        "import sys\nsys.modules['json'] = None\nm = sys.modules\nm['heapq'] = 'hacked'\nprint(1)",
        "import json, heapq\nprint(json.dumps([1]), heapq.nsmallest(1, [3, 2]))",
        "[1] [2]",
    ),
    "os_environ": (
        "import os\nos.environ['LEAK'] = '1'\nos.putenv('LEAK2', '1')\nprint(1)",
        "import os\nprint('LEAK' in os.environ, os.getenv('LEAK2'))",
        "False None",
    ),
    "cwd": (
        "import os\nos.chdir('/')\nprint(1)",
        "import os\nprint(os.getcwd() != '/')",
        "True",
    ),
    "umask": (
        "import os\nos.umask(0o777)\nprint(1)",
        "import os\nm = os.umask(0)\nos.umask(m)\nprint(oct(m))",
        "0o22",
    ),
    "signal_handlers": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, lambda *a: None)\nprint(1)",
        "import signal\nprint(signal.getsignal(signal.SIGALRM) == signal.SIG_DFL,\n"
        "      signal.getsignal(signal.SIGINT) is signal.default_int_handler)",
        "True True",
    ),
    "abc_registry": (
        "import numbers\nnumbers.Number.register(str)\nprint(1)",
        "import numbers\nprint(isinstance('a', numbers.Number))",
        "False",
    ),
    "class_attribute_alias": (
        "import string\nT = string.Template\nT.delimiter = '%'\nprint(1)",
        "import string\nprint(string.Template('$a').substitute(a=1))",
        "1",
    ),
    "calendar_instance_state": (
        "import calendar\ncalendar.setfirstweekday(6)\nprint(1)",
        "import calendar\nprint(calendar.firstweekday())",
        "0",
    ),
    "module_alias_attribute": (
        "import json\nd = json.decoder\nd.scanstring = None\nprint(1)",
        "import json\nprint(json.loads('\"a\"'))",
        "a",
    ),
    "numpy_error_mode_and_print_options": (
        "import numpy as np\nnp.seterr(all='raise')\nnp.set_printoptions(precision=1)\nprint(1)",
        "import numpy as np\nprint(np.float64(1.0) / 0.0, np.array([1.23456]))",
        "inf [1.23456]",
    ),
    "files_in_temp_dir": (
        "open('leak.txt', 'w').write('x')\nprint(1)",
        "import os\nprint(os.listdir('.'))",
        "[]",
    ),
}


@pytest.fixture(scope="module")
def pool():
    with no_leftover_processes():
        with SandboxPool("gvisor", workers=1, limits=Limits(memory_mb=512)) as p:
            yield p


@pytest.mark.parametrize("name", list(CASES))
def test_no_state_survives_from_one_program_to_the_next(pool, name):
    mutator, victim, expected = CASES[name]
    alone = pool.run([Job(code=victim, tests=[("", expected)], time_limit=LIMIT, want_output=True)])[0]
    assert alone.status == ["pass"], f"{name}: the victim fails alone: {alone.outputs}"
    jobs = [
        Job(code=mutator, tests=[("", "1"), ("", "1")], time_limit=LIMIT),
        Job(code=victim, tests=[("", expected)], time_limit=LIMIT, want_output=True),
    ]
    pool.run(jobs)  # one sandbox: the mutator runs first, then the victim, in the same worker
    assert jobs[0].status == ["pass", "pass"], f"{name}: the mutator itself: {jobs[0].status}"
    assert jobs[1].status == ["pass"], f"{name}: the victim saw the mutator's state: printed {jobs[1].outputs}"
