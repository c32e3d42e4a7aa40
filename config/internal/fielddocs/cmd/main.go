// Command cmd regenerates config/fielddocs_gen.go from the component
// packages' field comments. Run it from the repository root (make docs).
package main

import (
	"log"
	"os"

	"github.com/tusou/tusou/config/internal/fielddocs"
)

func main() {
	docs, err := fielddocs.Extract(fielddocs.Sources)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("config/fielddocs_gen.go", fielddocs.Render(docs), 0o644); err != nil {
		log.Fatal(err)
	}
}
