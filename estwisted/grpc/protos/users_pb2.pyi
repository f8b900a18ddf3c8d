from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name", "password", "full_name", "groups")
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        PASSWORD_FIELD_NUMBER: _ClassVar[int]
        FULL_NAME_FIELD_NUMBER: _ClassVar[int]
        GROUPS_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        password: str
        full_name: str
        groups: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, login_name: _Optional[str] = ..., password: _Optional[str] = ..., full_name: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: CreateReq.Options
    def __init__(self, options: _Optional[_Union[CreateReq.Options, _Mapping]] = ...) -> None: ...

class CreateResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name", "password", "full_name", "groups")
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        PASSWORD_FIELD_NUMBER: _ClassVar[int]
        FULL_NAME_FIELD_NUMBER: _ClassVar[int]
        GROUPS_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        password: str
        full_name: str
        groups: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, login_name: _Optional[str] = ..., password: _Optional[str] = ..., full_name: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: UpdateReq.Options
    def __init__(self, options: _Optional[_Union[UpdateReq.Options, _Mapping]] = ...) -> None: ...

class UpdateResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name",)
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        def __init__(self, login_name: _Optional[str] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: DeleteReq.Options
    def __init__(self, options: _Optional[_Union[DeleteReq.Options, _Mapping]] = ...) -> None: ...

class DeleteResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name",)
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        def __init__(self, login_name: _Optional[str] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: EnableReq.Options
    def __init__(self, options: _Optional[_Union[EnableReq.Options, _Mapping]] = ...) -> None: ...

class EnableResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DisableReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name",)
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        def __init__(self, login_name: _Optional[str] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: DisableReq.Options
    def __init__(self, options: _Optional[_Union[DisableReq.Options, _Mapping]] = ...) -> None: ...

class DisableResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DetailsReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name",)
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        def __init__(self, login_name: _Optional[str] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: DetailsReq.Options
    def __init__(self, options: _Optional[_Union[DetailsReq.Options, _Mapping]] = ...) -> None: ...

class DetailsResp(_message.Message):
    __slots__ = ("user_details",)
    class UserDetails(_message.Message):
        __slots__ = ("login_name", "full_name", "groups", "last_updated", "disabled")
        class DateTime(_message.Message):
            __slots__ = ("ticks_since_epoch",)
            TICKS_SINCE_EPOCH_FIELD_NUMBER: _ClassVar[int]
            ticks_since_epoch: int
            def __init__(self, ticks_since_epoch: _Optional[int] = ...) -> None: ...
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        FULL_NAME_FIELD_NUMBER: _ClassVar[int]
        GROUPS_FIELD_NUMBER: _ClassVar[int]
        LAST_UPDATED_FIELD_NUMBER: _ClassVar[int]
        DISABLED_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        full_name: str
        groups: _containers.RepeatedScalarFieldContainer[str]
        last_updated: DetailsResp.UserDetails.DateTime
        disabled: bool
        def __init__(self, login_name: _Optional[str] = ..., full_name: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., last_updated: _Optional[_Union[DetailsResp.UserDetails.DateTime, _Mapping]] = ..., disabled: _Optional[bool] = ...) -> None: ...
    USER_DETAILS_FIELD_NUMBER: _ClassVar[int]
    user_details: DetailsResp.UserDetails
    def __init__(self, user_details: _Optional[_Union[DetailsResp.UserDetails, _Mapping]] = ...) -> None: ...

class ChangePasswordReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name", "current_password", "new_password")
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        CURRENT_PASSWORD_FIELD_NUMBER: _ClassVar[int]
        NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        current_password: str
        new_password: str
        def __init__(self, login_name: _Optional[str] = ..., current_password: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: ChangePasswordReq.Options
    def __init__(self, options: _Optional[_Union[ChangePasswordReq.Options, _Mapping]] = ...) -> None: ...

class ChangePasswordResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetPasswordReq(_message.Message):
    __slots__ = ("options",)
    class Options(_message.Message):
        __slots__ = ("login_name", "new_password")
        LOGIN_NAME_FIELD_NUMBER: _ClassVar[int]
        NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
        login_name: str
        new_password: str
        def __init__(self, login_name: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: ResetPasswordReq.Options
    def __init__(self, options: _Optional[_Union[ResetPasswordReq.Options, _Mapping]] = ...) -> None: ...

class ResetPasswordResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
