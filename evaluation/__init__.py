"""Retrieval evaluation shared by the exporter (`kuamo align`), `kuamo eval` and the benchmarks: metrics over
a score matrix, the held-out split, and the fashion retrieval tasks. numpy only; it imports nothing from
export/ or benchmarks/, so both can use it without an import circle."""
