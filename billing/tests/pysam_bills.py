"""Bills the cases in a JSON file with NREL's PySAM (Utilityrate5 and its URDB conversion) and
writes each case's monthly bill components, year 1, as JSON.

Input: [{"name", "urdb": {...record...}, "load_kw": [35040], "gen_kw": [35040]}, ...]
Output: {name: {"bill": [12], "energy": [12], "demand_flat": [12], "demand_tou": [12],
                "fixed": [12], "minimum": [12], "true_up": [12]}}

Usage: python3 pysam_bills.py CASES.json OUT.json
"""
import copy
import json
import sys

import PySAM.Utilityrate5 as utilityrate
from PySAM.UtilityRateTools import URDBv8_to_ElectricityRates


def bill(case):
    model = utilityrate.new()
    # The converter adds 1 to schedules in place: give it its own copy.
    model.ElectricityRates.assign(URDBv8_to_ElectricityRates(copy.deepcopy(case["urdb"])))
    model.ElectricityRates.rate_escalation = (0,)
    model.Lifetime.analysis_period = 1
    model.Lifetime.inflation_rate = 0
    model.Lifetime.system_use_lifetime_output = 0
    model.Load.load = tuple(case["load_kw"])
    model.SystemOutput.gen = tuple(case["gen_kw"])
    model.SystemOutput.degradation = (0,)
    model.execute(0)
    o = model.Outputs
    year1 = lambda rows: list(rows[1])
    return {
        "bill": year1(o.utility_bill_w_sys_ym),
        "energy": year1(o.charge_w_sys_ec_ym),
        "demand_flat": year1(o.charge_w_sys_dc_fixed_ym),
        "demand_tou": year1(o.charge_w_sys_dc_tou_ym),
        "fixed": year1(o.charge_w_sys_fixed_ym),
        "minimum": year1(o.charge_w_sys_minimum_ym),
        "true_up": year1(o.true_up_credits_ym),
    }


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = {case["name"]: bill(case) for case in cases}
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
