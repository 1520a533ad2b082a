"""dask: the same delayed, on a dask cluster; or the workerstate backend around
it."""

import joblib
from distributed import Client, LocalCluster
from joblib import Parallel
from joblib import delayed as joblib_delayed

import myapp
from workerstate import parallel

if __name__ == "__main__":  # dask starts its worker processes by spawning
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        myapp.SETTINGS["unit"] = "km"  # after the workers started
        parallel.register_global_parallel_callback(myapp.settings_callback)

        with joblib.parallel_config(backend="dask"):
            plain = Parallel()(joblib_delayed(myapp.unit)(i) for i in range(4))
            carried = Parallel()(
                parallel.delayed(myapp.unit)(i) for i in range(4)
            )
        # For calls made inside other libraries, with their own delayed:
        with joblib.parallel_config(backend="workerstate", inner="dask"):
            wrapped = Parallel()(
                joblib_delayed(myapp.unit)(i) for i in range(4)
            )

    print("dask, joblib.delayed:       ", plain)
    print("dask, workerstate delayed:  ", carried)
    print("workerstate backend on dask:", wrapped)
    assert plain == ["m"] * 4 and carried == wrapped == ["km"] * 4
