module github.com/asyncflow/asyncflow

go 1.26.0

require (
	github.com/aviate-labs/agent-go v0.6.1
	github.com/aviate-labs/secp256k1 v0.0.0-5e6736a
	github.com/decred/dcrd/dcrec/secp256k1/v4 v4.4.1
	github.com/fxamacker/cbor/v2 v2.7.0
	github.com/oklog/ulid/v2 v2.1.2
	github.com/stretchr/testify v1.12.1
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/aviate-labs/leb128 v0.3.0 // indirect
	github.com/bits-and-blooms/bitset v1.20.0 // indirect
	github.com/consensys/bavard v0.1.27 // indirect
	github.com/consensys/gnark-crypto v0.15.0 // indirect
	github.com/mmcloughlin/addchain v0.4.0 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.45.0 // indirect
	google.golang.org/protobuf v1.36.3 // indirect
	rsc.io/tmplfunc v0.0.3 // indirect
)
