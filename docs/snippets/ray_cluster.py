"""Ray: joblib's ray backend with workerstate's delayed."""

import joblib
import ray
from joblib import Parallel
from joblib import delayed as joblib_delayed
from ray.util.joblib import register_ray

import myapp
from workerstate import parallel

if __name__ == "__main__":
    register_ray()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        myapp.SETTINGS["unit"] = "km"
        parallel.register_global_parallel_callback(myapp.settings_callback)
        with joblib.parallel_config(backend="ray"):
            plain = Parallel(n_jobs=2)(
                joblib_delayed(myapp.unit)(i) for i in range(4)
            )
            carried = Parallel(n_jobs=2)(
                parallel.delayed(myapp.unit)(i) for i in range(4)
            )
    finally:
        ray.shutdown()
    print("ray, joblib.delayed:     ", plain)
    print("ray, workerstate delayed:", carried)
    assert plain == ["m"] * 4 and carried == ["km"] * 4
