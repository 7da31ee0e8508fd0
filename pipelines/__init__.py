"""The pipelines (installed as ``cure_pipelines``): the CURE training pipeline and the evaluation pipeline
(:mod:`.training`, their parameters :mod:`.params`), and what compiles, runs or submits them: :mod:`.compile`
(``cure compile``), :mod:`.local_run` and :mod:`.local_eval` (``cure run`` through ``kfp.local``), :mod:`.submit`
(``cure submit``). They use the components (``cure_components``) and the library (``cure``), never the reverse."""
