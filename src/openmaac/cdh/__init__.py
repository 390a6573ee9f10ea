"""The CDH (Customer Data Hub) API of CDH OpenAPI 2.0.1, under ``/cdh/v1``."""
