"""
Packaging for estwisted.
"""

from setuptools import find_packages, setup

setup(
    name="estwisted",
    version="0.1.0",
    description="A clustered event database on Twisted, wire-compatible with Event Store v5",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["estwisted", "estwisted.*"]) + ["twisted.plugins"],
    package_data={"estwisted": ["py.typed"], "estwisted.wire": ["*.proto"], "estwisted.grpc.protos": ["*.proto", "*.pyi"], "estwisted.web": ["static/*"]},
    include_package_data=True,
    install_requires=[
        "twisted[tls]>=24.3,<27",
        "klein>=24.8,<25",
        "treq>=24.9,<27",
        "pyyaml>=6.0,<7",
        "attrs>=23.1,<27",
        "pyopenssl>=24.0,<27",
        "service-identity>=24.1,<27",
        "protobuf>=7.35.1,<8",
        "prometheus_client>=0.20,<1",
        # HTTP/2 for the gRPC API (estwisted.grpc); no grpcio at run time.
        "h2>=4.1,<5",
        # V8 for user (JavaScript) projections (estwisted.projections).
        "mini-racer==0.14.1",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.100,<7",
            "photon-pump==0.9.5.2",
            "selenium>=4.20,<5",
            "kurrentdbclient==1.3.5",
        ],
        "dev": [
            "tox>=4,<5",
            "ruff>=0.6",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "types-PyYAML",
            "types-protobuf",
            "grpcio-tools==1.85.1",
        ],
    },
    entry_points={"console_scripts": ["estore = estwisted.node.cli:main"]},
    zip_safe=False,
)
