"""hls: DARTS architecture search on long-tailed CIFAR-10, with the Bilateral-Branch Network and
heterogeneous learning-rate scheduling of the architecture parameters (Tang et al. 2024).

The names a notebook or a script needs; everything else is in the modules (README, "Layout"):

    import hls
    config = hls.config("hls", profile="cpu", seed=0)     # a method at a profile, as data
    record = hls.get_run(config)          # read from the store or the archive, else trained
    record.eval["paper_protocol"]["acc"], record.genotype, record.path
    runs = hls.chapter_records("03_main_results", "cpu")  # what a chapter shows; trains nothing
"""

from .config import VERSION as __version__, ConfigError, RunConfig
from .experiments import LABELS, PROFILES, check_profile, config, retrain_config, seeds_of
from .plan import book_plan, chapter_records, finished_records, parent_records
from .retrain import RetrainConfig
from .runs import find_record, get_run, load_record

__all__ = ["__version__", "ConfigError", "RunConfig", "RetrainConfig", "LABELS", "PROFILES",
           "check_profile", "config", "retrain_config", "seeds_of", "book_plan", "chapter_records",
           "finished_records", "parent_records", "find_record", "get_run", "load_record"]
