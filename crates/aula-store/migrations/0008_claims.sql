-- Work claimed by one gateway of several (its `gateways.id`): the gateway
-- that trains a running fine-tuning job, and the one ingesting a waiting
-- vector store file. A claim of a gateway that is gone (no longer in the
-- list of gateways) is free to take.
ALTER TABLE fine_tuning_jobs ADD COLUMN trained_by TEXT;
ALTER TABLE vector_store_files ADD COLUMN claimed_by TEXT;
