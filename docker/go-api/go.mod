module chaoslab.dev/go-api

go 1.26.8
