-- Which gateway trains a running fine-tuning job (its `gateways.id`): a
-- job whose gateway is gone goes back to the queue, and one left running
-- by a live gateway is left alone.
ALTER TABLE fine_tuning_jobs ADD COLUMN trained_by TEXT;
