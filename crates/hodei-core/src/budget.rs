//! Budgets (SPEC §2.3): an amount a tenant may spend per period, and what happens at 100 % —
//! new and pending jobs held (`budget_exhausted`) or new submits refused — while running jobs
//! always finish.

use crate::ids::{BudgetId, TenantId};
use crate::job::string_enum;
use crate::time::{Timestamp, civil_from_days, days_from_civil};

string_enum!(
    /// The calendar a budget's amount renews with (UTC); `total` never renews.
    Period {
        Daily = "daily",
        Weekly = "weekly",
        Monthly = "monthly",
        Total = "total",
    }
);

string_enum!(
    /// At 100 %: new submits are held with the pending jobs, or refused (402).
    OnExhausted {
        Hold = "hold",
        Reject = "reject",
    }
);

string_enum!(
    /// Where the spend stands against the amount: `warning` from the first threshold,
    /// `critical` from the second, `exhausted` at 100 %.
    BudgetState {
        Ok = "ok",
        Warning = "warning",
        Critical = "critical",
        Exhausted = "exhausted",
    }
);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub id: BudgetId,
    pub tenant: TenantId,
    /// In micro-units of the currency, > 0.
    pub amount_micros: i64,
    pub period: Period,
    /// Ascending percentages, the last at most 100 (default 80, 90, 100).
    pub thresholds_pct: Vec<u32>,
    pub on_exhausted: OnExhausted,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

const DAY_MS: i64 = 86_400_000;

/// The UTC days `[first, last]` (days since the epoch) of the period that contains `now`:
/// today; Monday to Sunday; the calendar month; or everything since the epoch (`total`).
pub fn period_days(period: Period, now: Timestamp) -> (i64, i64) {
    let today = now.as_millis().div_euclid(DAY_MS);
    match period {
        Period::Daily => (today, today),
        // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday = 0.
        Period::Weekly => {
            let monday = today - (today + 3).rem_euclid(7);
            (monday, monday + 6)
        }
        Period::Monthly => {
            let (y, m, _) = civil_from_days(today);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1) - 1)
        }
        Period::Total => (0, today),
    }
}

/// The instant a period's first day begins.
pub fn day_start(day: i64) -> Timestamp {
    Timestamp::from_millis(day * DAY_MS)
}

/// Where `spent` stands against the budget.
pub fn state(b: &Budget, spent_micros: i64) -> BudgetState {
    let pct = |p: u32| i128::from(spent_micros) * 100 >= i128::from(b.amount_micros) * i128::from(p);
    if pct(100) {
        return BudgetState::Exhausted;
    }
    let below_100: Vec<u32> = b.thresholds_pct.iter().copied().filter(|&p| p < 100).collect();
    match below_100.iter().rposition(|&p| pct(p)) {
        Some(i) if i >= 1 => BudgetState::Critical,
        Some(_) => BudgetState::Warning,
        None => BudgetState::Ok,
    }
}

/// The thresholds `spent` has reached, each with its alert's severity: `critical` from 90 %,
/// `warning` below (SPEC §2.13). Each fires once per period.
pub fn reached(b: &Budget, spent_micros: i64) -> Vec<(u32, &'static str)> {
    b.thresholds_pct
        .iter()
        .filter(|&&p| i128::from(spent_micros) * 100 >= i128::from(b.amount_micros) * i128::from(p))
        .map(|&p| (p, if p >= 90 { "critical" } else { "warning" }))
        .collect()
}

/// No demotion: the full fair-share weight, in per-mille.
pub const FULL_WEIGHT: u32 = 1000;

/// Budget-aware fair share (SPEC §2.3): the factor on a tenant's fair-share weight while it
/// spends ahead of its period's pace, `clamp((1 − s)/(1 − e), 0.1, 1)` with `s` the share of
/// the amount spent and `e` the share of the period elapsed at `now` — in per-mille, exact in
/// integers. A `total` budget (or a period's last instant) has `e = 1`: no demotion until it is
/// spent, then the floor.
pub fn demotion_permille(b: &Budget, spent_micros: i64, now: Timestamp) -> u32 {
    let amount = i128::from(b.amount_micros.max(1));
    let left = amount - i128::from(spent_micros.max(0));
    if left <= 0 {
        return 100;
    }
    let (first, last) = period_days(b.period, now);
    let (start, end) = (day_start(first).as_millis(), day_start(last + 1).as_millis());
    let (elapsed, span) = (i128::from((now.as_millis() - start).clamp(0, end - start)), i128::from((end - start).max(1)));
    if b.period == Period::Total || elapsed >= span {
        return FULL_WEIGHT;
    }
    // (left / amount) / ((span − elapsed) / span), × 1000.
    let f = left * span * 1000 / (amount * (span - elapsed));
    f.clamp(100, 1000) as u32
}

/// Validated thresholds: 1 to 10 of them, ascending, each from 1 to 100.
pub fn valid_thresholds(t: &[u32]) -> bool {
    (1..=10).contains(&t.len()) && t.iter().all(|p| (1..=100).contains(p)) && t.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: i64, d: i64, h: i64) -> Timestamp {
        Timestamp::from_millis(days_from_civil(y, m, d) * DAY_MS + h * 3_600_000)
    }

    #[test]
    fn spending_ahead_of_the_pace_lowers_the_weight_smoothly_to_a_floor() {
        let b = Budget {
            id: BudgetId::from_uuid(uuid::Uuid::nil()),
            tenant: TenantId::parse("t").unwrap(),
            amount_micros: 1_000_000,
            period: Period::Daily,
            thresholds_pct: vec![80, 90, 100],
            on_exhausted: OnExhausted::Hold,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
            version: 1,
        };
        let noon = at(2026, 12, 7, 12);
        // Half the day gone: half spent is on pace; 75 % spent → (0.25)/(0.5) = 0.5.
        assert_eq!(demotion_permille(&b, 500_000, noon), 1000);
        assert_eq!(demotion_permille(&b, 100_000, noon), 1000, "behind the pace: never above 1");
        assert_eq!(demotion_permille(&b, 750_000, noon), 500);
        assert_eq!(demotion_permille(&b, 960_000, noon), 100, "the floor");
        assert_eq!(demotion_permille(&b, 1_000_000, noon), 100, "spent");
        assert_eq!(demotion_permille(&b, 750_000, at(2026, 12, 7, 18)), 1000, "three quarters gone: on pace");
        let total = Budget { period: Period::Total, ..b.clone() };
        assert_eq!(demotion_permille(&total, 990_000, noon), 1000, "a total budget has no pace");
        assert_eq!(demotion_permille(&total, 1_000_000, noon), 100);
    }

    #[test]
    fn periods_are_utc_calendar_days_weeks_and_months() {
        let now = at(2026, 12, 7, 15); // a Monday
        let day = |y, m, d| days_from_civil(y, m, d);
        assert_eq!(period_days(Period::Daily, now), (day(2026, 12, 7), day(2026, 12, 7)));
        assert_eq!(period_days(Period::Weekly, now), (day(2026, 12, 7), day(2026, 12, 13)));
        assert_eq!(period_days(Period::Weekly, at(2026, 12, 13, 23)), (day(2026, 12, 7), day(2026, 12, 13)), "Sunday ends the week");
        assert_eq!(period_days(Period::Monthly, now), (day(2026, 12, 1), day(2026, 12, 31)));
        assert_eq!(period_days(Period::Monthly, at(2028, 2, 10, 0)), (day(2028, 2, 1), day(2028, 2, 29)), "a leap February");
        assert_eq!(period_days(Period::Total, now).0, 0);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for d in [-1000, 0, 59, 20_429, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn states_follow_the_thresholds() {
        let b = Budget {
            id: BudgetId::from_uuid(uuid::Uuid::nil()),
            tenant: TenantId::parse("t").unwrap(),
            amount_micros: 1_000_000,
            period: Period::Monthly,
            thresholds_pct: vec![80, 90, 100],
            on_exhausted: OnExhausted::Hold,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            version: 1,
        };
        let states: Vec<BudgetState> = [0, 799_999, 800_000, 900_000, 999_999, 1_000_000, 5_000_000].iter().map(|&s| state(&b, s)).collect();
        use BudgetState::*;
        assert_eq!(states, [Ok, Ok, Warning, Critical, Critical, Exhausted, Exhausted]);
        assert!(valid_thresholds(&[80, 90, 100]) && valid_thresholds(&[50]));
        assert!(!valid_thresholds(&[]) && !valid_thresholds(&[90, 80]) && !valid_thresholds(&[0]) && !valid_thresholds(&[101]));
    }
}
