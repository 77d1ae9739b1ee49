"""What a study searches and what one run trains: references to datasets and models (`refs`), the table of
hyperparameters (`params`), study specs (`study`) and run configs (`run`)."""

from tuner.errors import SpecError
from tuner.spec.params import Choices, Domain, Fixed, Range
from tuner.spec.run import METRICS, RunConfig
from tuner.spec.study import PRUNERS, SAMPLERS, StudySpec, load_spec, shipped_specs

__all__ = ["METRICS", "PRUNERS", "SAMPLERS", "Choices", "Domain", "Fixed", "Range", "RunConfig", "SpecError",
           "StudySpec", "load_spec", "shipped_specs"]
