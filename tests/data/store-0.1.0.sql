BEGIN TRANSACTION;
CREATE TABLE failures (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	target VARCHAR NOT NULL, 
	precision VARCHAR(8) NOT NULL, 
	batch_size INTEGER NOT NULL, 
	attack VARCHAR NOT NULL, 
	eps FLOAT NOT NULL, 
	sample_id INTEGER NOT NULL, 
	queries INTEGER NOT NULL, 
	budget_queries INTEGER NOT NULL, 
	duration_s FLOAT NOT NULL, 
	energy_j FLOAT, 
	event INTEGER NOT NULL, 
	label INTEGER, 
	created_at VARCHAR, 
	PRIMARY KEY (id), 
	CONSTRAINT one_row_per_attacked_sample UNIQUE (run_id, precision, batch_size, attack, eps, sample_id), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
INSERT INTO "failures" VALUES(1,'a44158eae172476e844bb8451d0f4004','cpu','fp32',1,'square',0.15,0,10,50,0.01,NULL,0,0,'2026-11-01T00:00:00+00:00');
INSERT INTO "failures" VALUES(2,'a44158eae172476e844bb8451d0f4004','cpu','fp32',1,'square',0.15,1,11,50,0.02,NULL,1,1,'2026-11-01T00:00:00+00:00');
INSERT INTO "failures" VALUES(3,'a44158eae172476e844bb8451d0f4004','cpu','fp32',1,'square',0.15,2,12,50,0.03,NULL,0,2,'2026-11-01T00:00:00+00:00');
CREATE TABLE measurements (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	target VARCHAR NOT NULL, 
	runtime VARCHAR NOT NULL, 
	precision VARCHAR(8) NOT NULL, 
	batch_size INTEGER NOT NULL, 
	input_set VARCHAR NOT NULL, 
	n_samples INTEGER, 
	iterations INTEGER, 
	duration_s FLOAT, 
	latency_mean_ms FLOAT, 
	latency_p50_ms FLOAT, 
	latency_p90_ms FLOAT, 
	latency_p95_ms FLOAT, 
	latency_p99_ms FLOAT, 
	latency_std_ms FLOAT, 
	latency_min_ms FLOAT, 
	latency_max_ms FLOAT, 
	throughput_sps FLOAT, 
	accuracy FLOAT, 
	profiler VARCHAR, 
	power_samples INTEGER, 
	power_mean_w FLOAT, 
	power_idle_w FLOAT, 
	energy_j FLOAT, 
	energy_per_inference_j FLOAT, 
	power_note TEXT, 
	latency_vs_clean_ratio FLOAT, 
	latency_vs_clean_p FLOAT, 
	latency_vs_clean_cliffs_delta FLOAT, 
	energy_vs_clean_ratio FLOAT, 
	throttled BOOLEAN, 
	throttle_note TEXT, 
	clocks_start TEXT, 
	clocks_end TEXT, 
	artifact_sha256 VARCHAR(64), 
	fingerprint TEXT, 
	latencies_ms TEXT, 
	created_at VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT one_row_per_cell UNIQUE (run_id, runtime, precision, batch_size, input_set), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
INSERT INTO "measurements" VALUES(1,'a44158eae172476e844bb8451d0f4004','cpu','onnxruntime','fp32',1,'clean',NULL,NULL,NULL,NULL,1.5,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL,'{"host": "h"}','[1.0, 2.0]','2026-11-01T00:00:00+00:00');
INSERT INTO "measurements" VALUES(2,'a44158eae172476e844bb8451d0f4004','cpu','onnxruntime','fp32',8,'clean',NULL,NULL,NULL,NULL,12.0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,NULL,'{"host": "h"}','[1.0, 2.0]','2026-11-01T00:00:00+00:00');
CREATE TABLE runs (
	run_id VARCHAR(32) NOT NULL, 
	target VARCHAR NOT NULL, 
	profile VARCHAR NOT NULL, 
	model VARCHAR NOT NULL, 
	model_sha256 VARCHAR(64), 
	runtime VARCHAR, 
	host VARCHAR NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	started_at VARCHAR NOT NULL, 
	finished_at VARCHAR, 
	versions TEXT, 
	resume_key VARCHAR, 
	PRIMARY KEY (run_id)
);
INSERT INTO "runs" VALUES('a44158eae172476e844bb8451d0f4004','cpu','quick','resnet8','abababababababababababababababababababababababababababababababab','onnxruntime','h','done','2026-11-29T19:21:55+00:00','2026-11-29T19:21:55+00:00','{"edgerob": "0.1.0"}','cpu|quick|abababababababababababababababababababababababababababababababab|onnxruntime|h');
CREATE INDEX ix_runs_resume_key ON runs (resume_key);
COMMIT;
