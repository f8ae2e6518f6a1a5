"""The zstd dictionary of format 2.0 headers (raw content: JSON text that headers repeat).

Part of the format: a 2.0 header is only readable with exactly these bytes (SHA-256 in
docs/FORMAT.md). Never edit them; a better dictionary needs a new format version, and readers
keep this one for 2.0 files. The text is header JSON with digests and most numbers left out,
the commonest (stored-file) forms last, where offsets into the dictionary are shortest.
"""
HEADER_DICT_2_0 = (
    b'{"members":[],"source":{"format":"array"},"volumes":[{"chunks":[],"codec":"zstd","data":'
    b'{"crc32":,"length":,"offset":0},"digest":"","dtype":"|u1","sha256":"","shape":[]}],"writ'
    b'er":"medzip 0.1.0"}'
    b'{"members":[{"codec":"xz","crc32":,"length":,"name":"nifti_header","offset":,"sha256":""'
    b',"size":352},{"codec":"raw","crc32":,"length":10,"name":"gzip_header","offset":,"sha256"'
    b':"","size":10}],"source":{"datatype":"int16","descrip":"","dtype":"<i2","format":"nifti"'
    b',"gz_level":6,"gz_sha256":"","gz_size":,"gzip":true,"nifti_version":1,"nii_sha256":"","n'
    b'ii_size":,"scl_inter":0.0,"scl_slope":1.0,"shape":[],"vox_offset":352,"zooms":[1.0,1.0,1'
    b'.0]},"volumes":[{"chunks":[{"crc32":,"length":,"nz":,"offset":186,"t":0,"z0":0},{"crc32"'
    b':,"length":,"nz":,"offset":,"t":1,"z0":0}],"codec":"predictive","digest":"","dtype":"<i2'
    b'","min":0,"model":{"name":"ls3d"},"predictor_params":{"crc32":,"length":186,"offset":0},'
    b'"sha256":"","shape":[],"value_table":{"count":,"crc32":,"length":,"offset":0},"vmax":}],'
    b'"writer":"medzip 0.1.0"}'
    b'{"members":[{"codec":"xz","crc32":,"length":,"name":"/dicom-headers","offset":,"sha256":'
    b'"","size":}],"source":{"files":[{"dtype":"<u2","head":[0,],"path":".dcm","series":0,"sha'
    b'256":"","size":,"tail":[,0]}],"format":"dicom","input":"file","name":".dcm","series":[{"'
    b'cols":512,"dtype":"uint16","files":[0],"frames":[1],"grid":0,"layout":"stack","modality"'
    b':"MR","mosaic":0,"rows":512,"shape":[1,512,512],"uid":"1.2.840.10008.","volume":0}],"ver'
    b'sion":1},"volumes":[{"chunks":[{"crc32":,"length":,"nz":1,"offset":,"t":0,"z0":0}],"code'
    b'c":"predictive","digest":"","dtype":"<i2","min":,"model":{"name":"medzip-lstm","sha256":'
    b'""},"predictor_params":{"crc32":,"length":,"offset":0},"sha256":"","shape":[],"vmax":}],'
    b'"writer":"medzip 0.1.0"}'
    b'{"members":[{"codec":"zstd","crc32":,"data_crc32":,"size":}],"source":{"format":"stored"'
    b'},"volumes":[]}'
    b'{"members":[{"codec":"xz","crc32":,"data_crc32":,"size":}],"source":{"format":"stored"},'
    b'"volumes":[]}'
    b'{"members":[{"crc32":}],"source":{"format":"stored"},"volumes":[]}'
)
