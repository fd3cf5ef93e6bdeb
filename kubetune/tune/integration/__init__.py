"""``ray.tune.integration`` -> ``kubetune.tune.integration``: report from XGBoost and LightGBM
training loops (``xgboost``, ``lightgbm``; each needs its library, see the module)."""
