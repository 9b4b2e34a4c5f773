module consort/bench/loadgen

go 1.22
