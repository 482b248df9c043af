"""One module per pipeline stage: each reads its inputs (URIs), calls the machinery below
(`data`, `checks`, `train`, `evaluate`, `registry`) and writes its outputs where
`sdod.workspace` says they land. `sdod.stages` is the typed front door over these."""
