-- Running attempts are billed every `cost_tracking.accrual_interval_s`: up to when.
ALTER TABLE attempts ADD COLUMN accrued_to INTEGER;
