"""Methods built on mrpruner's public API only (`mrpruner.register_method`), as worked examples."""
