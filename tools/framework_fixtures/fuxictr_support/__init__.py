"""What the FuxiCTR fixture generator (../fuxictr_fixtures.py) needs.

    stubs.py          stand-ins for packages FuxiCTR imports but never uses
                      on the way from a checkpoint and a batch to y_pred
    framework.py      FuxiCTR's own code, imported from a checkout, and the
                      steps of its model_zoo/MaskNet/run_expid.py repeated
    weights.py        seeded random values for every parameter of a model
    rank_requests.py  FuxiCTR's npz input columns, and the RankRequest that
                      sends the same values to our server

Nothing of FuxiCTR's code is copied here: framework.py imports it from the
checkout given on the command line.
"""
